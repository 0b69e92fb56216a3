"""The Prefloop web app: campaigns, blind pairwise rating, statistics and retrain jobs."""

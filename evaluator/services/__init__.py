"""Every write Prefloop makes, one module per area: keyword-only, typed functions named <noun>_<verb>."""

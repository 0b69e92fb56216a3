"""Every read that is more than a `get`, one module per area: keyword-only, typed, named <noun>_<verb>."""

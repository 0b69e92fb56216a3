"""Short function views: permission-checked fetch → form → one service call → redirect or render."""

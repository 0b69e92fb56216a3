"""Pure statistics: DataFrames in, dataclasses and DataFrames out; no ORM, no Django."""

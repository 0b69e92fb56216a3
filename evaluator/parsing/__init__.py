"""Parsers of uploaded files into validated rows, with errors that name the line and field; no writes."""

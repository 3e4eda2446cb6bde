"""Calibration: measurement folders, tool-output parsers, fits with uncertainties, validation."""

"""Stacks and their geometry: simulation, registration, DICOM, pre-processing, grids."""

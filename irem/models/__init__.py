"""The networks: the paper's Fourier-feature MLP and the grid INR, and their precision."""

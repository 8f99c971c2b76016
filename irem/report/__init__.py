"""Tables, figures and method labels of the benchmark."""

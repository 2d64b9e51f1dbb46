"""Benchmarks: the gradient engine, the views, the served model and its overload behaviour, the
imported-model engine ratio, batch invariance and training speed. Each prints figures and can
write them as JSON; none asserts a timing."""

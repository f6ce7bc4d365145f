"""What an update did to a model: intruder dimensions and the spectrum of the weight change.

intruders.py and spectrum.py are pure tensor functions (no I/O, no printing); weights.py reads (W0, dW) pairs
from a base and a tuned model; cache.py keeps base decompositions on disk; pipeline.py ties them together;
mitigate.py rescales intruders and writes a new PEFT adapter; plots.py draws the figures.
"""

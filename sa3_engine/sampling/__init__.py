"""Noise schedules and samplers: small pure functions over a ``model(x, t)`` callable."""

from sa3_engine.sampling.dpmpp import sample_dpmpp
from sa3_engine.sampling.euler import sample_euler
from sa3_engine.sampling.pingpong import sample_pingpong

SAMPLERS = {"pingpong": sample_pingpong, "euler": sample_euler, "dpmpp": sample_dpmpp}

"""Discrete-event simulation of a cascade deployment."""

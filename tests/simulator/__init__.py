"""Tests of the local service simulator (connector.simulator)."""

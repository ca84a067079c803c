"""Tests of the pure core: events, aggregates, combinators, snapshots, policies, systems."""

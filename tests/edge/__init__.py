"""Tests of the edge's application service."""

"""Thin Ray actors around the engine: they route, batch, await and persist."""

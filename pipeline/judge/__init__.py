"""The judge stage: false-negative audit, drop and relabel; near-duplicate negatives."""

"""The data card of a shard set: `build` gathers it, `stats` computes the figures,
`render` writes Markdown and HTML, `plots` draws the histograms (matplotlib, lazily).
"""

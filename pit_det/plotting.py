"""matplotlib for pit-det's figures (the analysis, Table 5 and the benchmark): imported on first
use, so that pit-det imports without it, and with the Agg backend, so that a headless machine draws
them."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt

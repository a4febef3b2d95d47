"""Values and helpers every layer uses: errors, the decision and reason table, the request
view, path grammar, clocks.
"""

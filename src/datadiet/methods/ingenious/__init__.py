"""INGENIOUS (Renduchintala et al. 2023): submodular math, embeddings, the method and its re-selection filter.
"""

"""Multistage data filtering (Ouyang et al. 2023): loss threshold (stages 0-1) and meta predictor (stage 2).
"""

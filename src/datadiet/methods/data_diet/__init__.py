"""Data diet (Fayyaz et al. 2022): EL2N / GraNd scores, scoring runs, selectors, and the dynamic variant.
"""

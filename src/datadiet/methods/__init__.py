"""Every method in one home each (a file or a folder), and the one registry.
"""

"""Tracked experiments for the seed tasks S0-S4: catalog, runner, studies and reports.

python -m experiments list
"""

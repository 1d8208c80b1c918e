"""autoloss.experiments"""

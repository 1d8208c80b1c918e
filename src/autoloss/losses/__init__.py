"""autoloss.losses"""

"""autoloss.policies"""

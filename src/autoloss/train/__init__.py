"""autoloss.train"""

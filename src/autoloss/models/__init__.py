"""autoloss.models"""

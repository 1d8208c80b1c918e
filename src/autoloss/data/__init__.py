"""autoloss.data"""

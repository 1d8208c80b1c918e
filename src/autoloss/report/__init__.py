"""autoloss.report"""

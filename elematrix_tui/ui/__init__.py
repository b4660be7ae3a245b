"""The Textual app. It observes engine events and answers engine questions; nothing else.

Only this package imports textual: ``engine`` and ``actions`` must stay importable without it.
"""

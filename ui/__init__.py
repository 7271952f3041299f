"""Moodshift studio: a Streamlit app that talks to the Moodshift service over HTTP only.

Run it with `python -m serving demo` (service and UI together) or `python -m ui`.
Nothing here imports `serving` (or torch): the studio is deployable on its own.
"""

"""Moodshift studio: a Streamlit app that talks to the Moodshift service over HTTP only.

Run it with `python -m serving demo` (service and UI together) or `python -m streamlit run ui/app.py`.
Nothing here imports torch or `serving.models`.
"""

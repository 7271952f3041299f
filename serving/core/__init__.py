"""Pure functions: images in/out and validation, masks, sizing, token budget, prompt text, blending math.

Nothing here loads a torch model, talks HTTP or imports Streamlit.
"""

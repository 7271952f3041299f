"""Studio page: upload a photo (its subject is found at once; clicks refine it), set the mood and prompt, generate."""

import streamlit as st

from ui.panels import generate, photo, points, prompt

st.title("Moodshift studio")
st.caption("New background, same subject: the subject is found for you (click to refine), give a word, generate.")

source = photo.render()
if source is None:
    st.info("Upload a photo to start.", icon=":material/add_photo_alternate:")
    st.stop()

canvas_col, controls_col = st.columns([5, 3], gap="large")
with canvas_col:
    st.markdown(f"#### 1 · The subject  \n:gray[{source.name} · {source.width}×{source.height}]")
    points.render(source)
with controls_col:
    st.markdown("#### 2 · Mood and prompt")
    prompt.render(source)
    st.markdown("#### 3 · Generate")
    generate.render(source)
generate.render_results()

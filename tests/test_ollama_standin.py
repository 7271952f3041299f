"""The Ollama stand-in (`serving.ollama_standin`, the demo's `--fake-ollama`) speaks Ollama's API as the real
`ollama` client reads it: chat and generate, streamed or not, the model list, and a missing model's 404."""

from __future__ import annotations

import ollama
import pytest

from serving.ollama_standin import FakeOllama


@pytest.fixture()
def standin():
    with FakeOllama({"llava": "calm, warm", "llama2": "misty forest, soft light"}) as fake:
        yield fake


def test_chat_streamed_and_whole_gives_the_scripted_reply(standin):
    client = ollama.Client(host=standin.url)
    whole = client.chat(model="llava", messages=[{"role": "user", "content": "mood?"}])
    assert whole.message.content == "calm, warm" and whole.done
    streamed = client.chat(model="llama2", messages=[{"role": "user", "content": "prompt?"}], stream=True)
    assert "".join(chunk.message.content or "" for chunk in streamed) == "misty forest, soft light"
    assert standin.requests_to("/api/chat")[-1].body["model"] == "llama2"


def test_generate_and_the_model_list(standin):
    client = ollama.Client(host=standin.url)
    assert client.generate(model="llava", prompt="mood?").response == "calm, warm"
    assert sorted(model.model for model in client.list().models) == ["llama2:latest", "llava:latest"]


def test_a_model_it_has_no_reply_for_is_a_404_as_from_ollama(standin):
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=standin.url).chat(model="mistral", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404 and "not found" in caught.value.error

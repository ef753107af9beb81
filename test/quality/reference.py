"""Development-only reference for `npm run bench:quality`: TF-IDF + logistic regression (sklearn).

Reads <dir>/<client>.train.jsonl, .validation.jsonl, .test.jsonl (the trainer's own split, written
by quality.bench.ts), picks C on the validation split, fits on train, scores the test split, and
prints one JSON line per client. Run with Debian's /usr/bin/python3 (apt-get install python3-sklearn).
"""
import json
import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def load(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    # Metadata enters as a token, as the trainer's featurizer adds it as a categorical feature.
    texts = [r["text"] + " " + " ".join(f"zzmeta{k}{v}" for k, v in sorted(r.get("metadata", {}).items())) for r in rows]
    return texts, [r["label"] for r in rows]


def main(directory):
    for train_file in sorted(Path(directory).glob("*.train.jsonl")):
        client = train_file.name[: -len(".train.jsonl")]
        xtr, ytr = load(train_file)
        xva, yva = load(Path(directory) / f"{client}.validation.jsonl")
        xte, yte = load(Path(directory) / f"{client}.test.jsonl")
        started = time.time()
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        Xtr = vec.fit_transform(xtr)
        best = None
        for c in (1.0, 10.0, 100.0):
            model = LogisticRegression(C=c, max_iter=3000)
            model.fit(Xtr, ytr)
            score = f1_score(yva, model.predict(vec.transform(xva)), average="macro") if xva else 0.0
            if best is None or score > best[0]:
                best = (score, c, model)
        _, c, model = best
        pred = model.predict(vec.transform(xte))
        print(json.dumps({
            "client": client, "C": c,
            "macroF1": f1_score(yte, pred, average="macro"), "accuracy": accuracy_score(yte, pred),
            "fitSeconds": time.time() - started,
        }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

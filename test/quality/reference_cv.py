"""Development-only reference for the real-text table of `npm run bench:quality`.

For every <client>.train.jsonl / <client>.test.jsonl in the directory (the benchmark's own 80/20
split, written by quality.bench.ts): TF-IDF (word 1-2-grams, sublinear tf) + logistic regression,
C chosen by 5-fold stratified cross-validation on the training part (GridSearchCV, macro-F1), refit
on the whole training part, scored on the test part. The solver is liblinear (one-vs-rest), the
usual choice for sparse text: with lbfgs (multinomial) the search took 2.5-6 minutes per fortune
client on the project's 2-core machine (fortune-topics 354 s); with liblinear all seven clients took
about 5 minutes together, and the four fortune clients scored 0 to +1.2 points higher than with lbfgs.
When <client>.eddy.jsonl holds Eddy's
predictions for the same test texts (served by POST /predict/batch), they are scored here too, so
both columns use the same metric code. Prints one JSON line per client.

Run with Debian's /usr/bin/python3 (apt-get install python3-sklearn).
"""
import json
import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

GRID = {"clf__C": [0.1, 1.0, 10.0, 100.0]}


def load(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def main(directory):
    d = Path(directory)
    for train_file in sorted(d.glob("*.train.jsonl")):
        client = train_file.name[: -len(".train.jsonl")]
        xtr, ytr = load(train_file)
        xte, yte = load(d / f"{client}.test.jsonl")
        started = time.time()
        pipe = Pipeline([
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("clf", LogisticRegression(solver="liblinear", max_iter=1000)),
        ])
        search = GridSearchCV(pipe, GRID, scoring="f1_macro", cv=StratifiedKFold(5, shuffle=True, random_state=0), n_jobs=1, refit=True)
        search.fit(xtr, ytr)
        pred = search.predict(xte)
        out = {
            "client": client, "C": search.best_params_["clf__C"], "cvMacroF1": search.best_score_,
            "macroF1": f1_score(yte, pred, average="macro"), "accuracy": accuracy_score(yte, pred),
            "fitSeconds": time.time() - started,
        }
        eddy_file = d / f"{client}.eddy.jsonl"
        if eddy_file.exists():
            eddy = [json.loads(line)["label"] for line in eddy_file.read_text().splitlines() if line]
            if len(eddy) == len(yte):
                out["eddyMacroF1"] = f1_score(yte, eddy, average="macro")
                out["eddyAccuracy"] = accuracy_score(yte, eddy)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

import json
import math

from sklearn.metrics import roc_auc_score

from search.cli import main
from search.evaluation import _ndcg, evaluate_search
from search.pipeline import SearchRequest


def test_ndcg_against_hand_computation():
    # ranked: a(3) b(0) c(2); ideal: a(3) c(2) b(0)
    dcg = 3 / math.log2(2) + 0 + 2 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3)
    assert math.isclose(_ndcg(["a", "b", "c"], [3, 2, 1], {"a": 3, "b": 0, "c": 2}, 10), dcg / idcg, rel_tol=1e-9)
    # a judged relevant video that was not retrieved counts against the ranking
    assert _ndcg(["b"], [1.0], {"a": 3, "b": 0}, 10) == 0.0


def test_eval_search_metrics_and_auc(pipeline, tmp_path):
    queries = {"q1": "周杰伦 晴天", "q2": "hebe"}
    qrels = {"q1": {"t-qingtian-mv": 3, "t-qingtian-live": 3, "t-qingtian-cover": 2, "t-langlang": 1, "t-gem": 0},
             "q2": {"t-hebe-1": 3, "t-hebe-2": 3, "t-she": 2, "t-acdc": 0}}
    rep = evaluate_search(pipeline, queries, qrels, run_path=tmp_path / "run.txt", progress=False)
    assert rep.queries == 2 and 0.8 < rep.ndcg10 <= 1.0 and rep.mrr == 1.0
    # AUC = scikit-learn on the same (label, final score) pairs; unretrieved → lowest score
    labels, scores = [], []
    for qid, judged in qrels.items():
        res = pipeline.search(SearchRequest(queries[qid], size=100))
        s = {c.video_id: c.rank_score for c in res.hits}
        floor = min(s.values()) - 1.0
        for v, g in judged.items():
            if g != 1:
                labels.append(int(g >= 2))
                scores.append(s.get(v, floor))
    assert math.isclose(rep.auc, roc_auc_score(labels, scores))
    run = (tmp_path / "run.txt").read_text().splitlines()
    qid, q0, vid, rank, score, name = run[0].split()
    assert (qid, q0, rank) == ("q1", "Q0", "1")


def test_eval_search_cli_json(embedded_index, tmp_path, capsys):
    (tmp_path / "queries.jsonl").write_text(json.dumps({"qid": "1", "query": "周杰伦 晴天"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "qrels.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"qid": "1", "video_id": "t-qingtian-mv", "grade": 3}, {"qid": "1", "video_id": "t-langlang", "grade": 0}]) + "\n")
    rc = main(["eval", "search", "--queries", str(tmp_path / "queries.jsonl"), "--qrels", str(tmp_path / "qrels.jsonl"),
               "--index-dir", str(embedded_index), "--json", "--run", str(tmp_path / "run.trec")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["queries"] == 1 and out["AUC(3,2 vs 0)"] == 1.0 and out["NDCG@10"] > 0.9
    assert (tmp_path / "run.trec").exists()

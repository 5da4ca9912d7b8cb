"""What the search says about its metric on data like the objective study's sets (tuning.evidence): one line,
plain about a ranking that failed, said apart from a delivered figure that did not move."""
import yaml

from tuning.evidence import evidence_line

ROWS = {
    "fails-like-real": {"metric": "m", "rho": -0.33, "interval": [-0.54, -0.08], "trials": 30, "at_best": 27,
                        "network": {"rho": 0.46, "interval": [0.10, 0.74]}},
    "synthetic": {"metric": "m", "rho": 0.34, "interval": [-0.05, 0.64], "trials": 30, "at_best": 1,
                  "network": {"rho": 0.68, "interval": [0.41, 0.85]}},
    "100 clips per ID": {"metric": "m", "rho": -0.4, "interval": [-0.6, -0.1], "trials": 30, "at_best": 2},
    "first-shot 2023": {"metric": "m", "rho": 0.5, "interval": [0.2, 0.7], "trials": 30, "at_best": 3},
}


def test_evidence_lines(tmp_path):
    f = tmp_path / "evidence.yaml"
    f.write_text(yaml.safe_dump(ROWS))
    saturated = evidence_line("m", {"00": 24, "02": 3}, False, f)
    assert "27 of 30 trials delivered the same, best test figure" in saturated and "+0.46 [+0.10, +0.74]" in saturated
    assert not saturated.startswith("note") and "reverse" not in saturated
    unsure = evidence_line("m", {"00": 12, "02": 12}, False, f)
    assert unsure.startswith("note:") and "the interval includes 0" in unsure and "ρ = +0.68" in unsure
    reverse = evidence_line("m", {"00": 900, "02": 900}, False, f)
    assert "ranked trials in reverse" in reverse and "compare the chosen trial with stats-knn" in reverse
    assert "ranked trials: ρ = +0.50" in evidence_line("m", {"00": 8}, True, f)
    assert "no objective study of other" in evidence_line("other", {"00": 8}, True, f)

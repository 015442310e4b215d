"""Write preds.csv: the predictions a model produced elsewhere (here: simulated).

In a real project this file comes from your inference job (or `medaudit predict`);
columns: label, score, attribute columns, optional patient_id.
"""

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).with_name("preds.csv")


def main(out: Path = OUT, n: int = 4000, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    age = rng.integers(18, 95, n)
    age_group = pd.cut(
        age, [0, 40, 60, 80, 200], labels=["18-39", "40-59", "60-79", "80+"], right=False
    )
    label = (rng.random(n) < 0.25 + 0.002 * (age - 50)).astype(int)
    # Binormal scores: the same separation in every group (a fair model).
    z = rng.normal(1.8 * label, 1.0)
    score = 1 / (1 + np.exp(-(z - 1.2)))
    pd.DataFrame(
        {
            "patient_id": [f"P{i // 2:05d}" for i in range(n)],
            "label": label,
            "score": score.round(5),
            "sex": sex,
            "age": age,
            "age_group": age_group.astype(str),
        }
    ).to_csv(out, index=False)


if __name__ == "__main__":
    main()

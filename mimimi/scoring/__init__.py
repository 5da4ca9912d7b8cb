"""The scoring library: from a model's outputs to anomaly scores and decisions (no MLflow, no plots).

One module per job, in the order a clip goes through them:

* ``outputs``: run a model over every segment of clips -> one row per clip (native score, embedding,
  predicted ID, log-mel statistics): ``clip_outputs``;
* ``backends``: the per-ID anomaly scorers on embeddings (kNN, Mahalanobis, GMM), cross-fitting and
  normal-only decision thresholds;
* ``fitted``: the fitted scoring state a checkpoint carries (every scorer per ID, their thresholds, the
  default scorer): ``fit_scoring`` and ``Scoring``;
* ``proxies``: the leak-free validation objective ``val_proxy_auc`` (held-out normals against proxy
  outliers);
* ``clips``: score clips with a loaded model: a table of indexed clips (``score_clips``, what evaluation
  uses) or new recordings given as files or served rows (one loop: validate, decode, score, decide).

Training, evaluation, ``mimimi score`` and the served model all score through here.
"""

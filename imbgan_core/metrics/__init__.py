"""Metrics of class-conditional generators on long-tailed data: every per-class metric from one feature pass.

Entry point: ``imbgan_core.metrics.evaluator.Evaluator(data, cfg.eval, annotator).evaluate(generate)`` -> ``EvalResult``
(``scalars``, ``per_class``, ``meta``). Metric groups (``eval.metrics``) and the scalar keys they report are
``imbgan_core.config.METRIC_GROUPS``; the names are stable (search spaces, MLflow and the docs use them):

=================  =====================================================  ==========================================
group              scalar keys                                            what
=================  =====================================================  ==========================================
fid                fid                                                    FID, all generated vs all real eval images
intra_fid          intra_fid, intra_fid_std, fid_many/medium/few          per-class FID: mean, population std over
                                                                          classes; FID of each group's pooled classes
kid                kid, kid_few                                           KID (unbiased MMD², cubic kernel)
intra_kid          intra_kid                                              mean per-class KID
is                 is                                                     Inception Score, 10 splits (std in meta)
prdc / intra_prdc  precision, recall, density, coverage / intra_*         Naeem et al. 2020, k = eval.prdc_k
lpips              lpips, intra_lpips                                     LPIPS(AlexNet) over random pairs
diversity          diversity, intra_diversity                             offline: pairwise feature distance / real's
class_accuracy     class_accuracy                                         annotator label == conditioning label
class_kl           class_kl                                               KL(annotator label histogram ‖ uniform)
cas                cas, cas_real                                          Classification Accuracy Score (metrics.cas)
=================  =====================================================  ==========================================

Per-class vectors (``per_class``): fid, kid, precision, recall, density, coverage, lpips, diversity, class_accuracy.
Sample counts are in ``meta``: samples_per_class, generated_total, real_per_class, real_total, kid_estimate ("full
sample" or "S subsets x M"), lpips_pairs, cas_generated; plus feature_space, feature_dim, feature_weights and timings.

Unconditional generators (``model.g_conditional: false``, CBGAN's own setting): only the groups of
``config.UNCONDITIONAL_METRICS`` (fid, is, prdc, class_kl) are defined; the others group images by the label G was
asked for and ignored, so such a config is rejected before training (``imbgan_core.methods.config_problems``).

Feature spaces (``eval.features``). ``annotator`` (default, offline): the balanced annotator classifier trained on the
dataset itself. FID / KID / PRDC / IS computed there are *domain* metrics ("annotator FID"), NOT Inception FID: their
scale differs and they are comparable only with other results of the same annotator (``meta["feature_weights"]``).
``inception``: torch-fidelity's InceptionV3 with the FID weights, comparable to published FIDs when sample counts match;
it needs ``weights-inception-2015-12-05-6726825d.pth`` in ``$TORCH_HOME/hub/checkpoints`` or ``eval.weights_path``.
``meta["feature_space"]`` travels with every result (MLflow tags runs with it).

Offline diversity: LPIPS needs torchvision's AlexNet weights (``alexnet-owt-7be5be79.pth`` in the hub cache) and
upsamples images below 64 px; the ``diversity`` group works anywhere, at 8–32 px included (MS-SSIM does not):
mean pairwise L2 distance of generated features divided by the real evaluation images' (1.0 ≈ real diversity,
0 = collapse), overall and within each class.

Modules: ``features`` (extractors, offline weight lookup), ``frechet`` (exact Fréchet distance: low-rank / mixed /
eigen forms, float64), ``kid``, ``prdc``, ``diversity``, ``distribution`` (class_kl, class_accuracy), ``cas``,
``evaluator`` (cached real statistics, one generation and one feature pass), ``report`` (per-class CSV and plot).
"""

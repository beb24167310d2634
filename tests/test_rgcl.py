"""RGCL against test-only transcriptions of its authors' code (JingbiaoMei/RGCL at 82a66c7): the classifier
(src/model/classifier.py `classifier_hateClipper`), the loss (src/model/loss.py `compute_loss`, metric cos,
one pseudo-gold positive), the choice of positives and hard negatives from the search results
(src/utils/retrieval.py `dense_retrieve_hard_negatives_pseudo_positive`) and the kNN vote
(src/utils/metrics.py `compute_metrics_retrieval`, use_sim); then what the index may hold, its refresh, and the
two retrieval backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hatememes.metrics import auroc
from hatememes.models import BuildContext
from hatememes.models.rgcl import RGCL, RGCLConfig, rgcl_loss
from hatememes.models.rgcl_knn import RGCLKnn, RGCLKnnConfig
from hatememes.retrieval import make_index

# ----- the authors' code, transcribed (their names; `args` fields passed as arguments)


class AuthorsClassifier(nn.Module):
    """classifier_hateClipper with batch_norm False and a binary output (dataset FB)."""

    def __init__(self, image_dim, text_dim, num_layers, proj_dim, map_dim, fusion_mode, dropout):
        super().__init__()
        self.fusion_mode = fusion_mode
        self.img_proj = nn.Sequential(nn.Linear(image_dim, map_dim), nn.Dropout(dropout[0]))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, map_dim), nn.Dropout(dropout[0]))
        input_shape = map_dim if fusion_mode == "align" else map_dim ** 2
        layers = [nn.Dropout(dropout[1])]
        for _ in range(num_layers):
            layers.append(nn.Linear(input_shape, proj_dim))
            layers.append(nn.ReLU())
            layers.append(nn.Dropout(dropout[2]))
            input_shape = proj_dim
        self.mlp = nn.Sequential(*layers)
        self.output_layer = nn.Linear(proj_dim, 1)

    def forward(self, img_feats, text_feats, return_embed=False):
        img_feats = self.img_proj(img_feats)
        text_feats = self.text_proj(text_feats)
        img_feats = nn.functional.normalize(img_feats, p=2, dim=1)
        text_feats = nn.functional.normalize(text_feats, p=2, dim=1)
        if self.fusion_mode == "align":
            x = torch.mul(img_feats, text_feats)
        elif self.fusion_mode == "cross":
            x = torch.bmm(img_feats.unsqueeze(2), text_feats.unsqueeze(1)).flatten(1, 2)
        embed = self.mlp[:-2](x)
        output = self.output_layer(self.mlp(x))
        if return_embed:
            return output, embed
        return output


def authors_loss(feats, labels, hard_negative_features, pseudo_positive_features, loss, triplet_margin=0.1,
                 metric="cos"):
    """compute_loss from the model's output on (metric cos or ip, no_pseudo_gold_positives 1,
    hard_negatives_loss, dense retrieval, hybrid_loss off: the BCE half is the shared loop's)."""
    proj_dim = feats.shape[1]
    batch_size = len(labels)
    labels = labels.bool()
    labels_inverse = ~labels
    label_matrix = torch.stack([labels if labels[i] == True else labels_inverse for i in range(batch_size)],  # noqa: E712
                               axis=0)
    label_matrix_negative = (~label_matrix).int()
    in_batch_positives_no = torch.sum(label_matrix, dim=1) - 1
    in_batch_negative_no = batch_size - in_batch_positives_no - 1
    feats_expanded = feats.unsqueeze(2).expand(batch_size, -1, batch_size)
    if metric == "cos":
        cos = nn.CosineSimilarity(dim=1, eps=1e-8)
        sim_matrix = cos(feats_expanded, feats_expanded.transpose(0, 2))
    elif metric == "ip":
        sim_matrix = torch.sum(feats_expanded * feats_expanded.transpose(0, 2), dim=1) / proj_dim
    sim_matrix.fill_diagonal_(0)
    in_batch_negative_loss = sim_matrix * label_matrix_negative
    neg_mask = in_batch_negative_loss != 0
    neg_zero_count_zero_mask = torch.zeros(batch_size) != in_batch_negative_no
    in_batch_negative_loss_sum = torch.zeros(batch_size)
    in_batch_negative_loss_sum[neg_zero_count_zero_mask] = torch.sum(
        in_batch_negative_loss[neg_zero_count_zero_mask], dim=1) / neg_mask.sum(dim=1)[neg_zero_count_zero_mask]
    in_batch_loss = in_batch_negative_loss_sum - 0
    no_hard_negatives = hard_negative_features.shape[1]
    feats_expanded = feats.unsqueeze(1).expand(batch_size, no_hard_negatives, -1)
    zeroLoss_mask = torch.sum(hard_negative_features, dim=2) != 0  # noqa: N806
    if metric == "cos":
        hard_loss = zeroLoss_mask * nn.CosineSimilarity(dim=2, eps=1e-8)(feats_expanded, hard_negative_features)
    elif metric == "ip":
        hard_loss = zeroLoss_mask * torch.sum(feats_expanded * hard_negative_features, dim=2) / proj_dim
    if loss != "contrastive":
        hard_loss = torch.sum(hard_loss, dim=1)
    feats_expanded = feats.unsqueeze(1).expand(batch_size, 1, -1)
    if metric == "cos":
        pseudo_gold_loss = nn.CosineSimilarity(dim=2, eps=1e-8)(feats_expanded, pseudo_positive_features)
    elif metric == "ip":
        pseudo_gold_loss = torch.sum(feats_expanded * pseudo_positive_features, dim=2) / proj_dim
    if loss != "contrastive":
        pseudo_gold_loss = torch.mean(pseudo_gold_loss, dim=1)
    if loss == "triplet":
        return torch.mean(torch.relu(in_batch_loss + hard_loss - pseudo_gold_loss + triplet_margin))
    neg_mask = in_batch_negative_loss != 0
    neg_zero_count = (neg_mask == 0).sum(dim=1)
    in_batch_negative_loss_tmp = torch.zeros(batch_size)
    in_batch_negative_loss_tmp[neg_zero_count_zero_mask] = (torch.exp(
        in_batch_negative_loss[neg_zero_count_zero_mask]).sum(dim=1) - neg_zero_count[neg_zero_count_zero_mask])
    in_batch_negative_loss = in_batch_negative_loss_tmp
    hard_neg_mask = hard_loss != 0
    hard_zero_count = (hard_neg_mask == 0).sum(dim=1)
    hard_zero_count_zero_mask = hard_zero_count != no_hard_negatives
    hard_loss_tmp = torch.zeros(batch_size)
    hard_loss_tmp[hard_zero_count_zero_mask] = (torch.exp(hard_loss[hard_zero_count_zero_mask]).sum(
        dim=1) - hard_zero_count[hard_zero_count_zero_mask]) / (hard_neg_mask.sum(dim=1))[hard_zero_count_zero_mask]
    hard_loss = hard_loss_tmp
    pseudo_gold_loss = torch.mean(torch.exp(pseudo_gold_loss), dim=1)
    loss = - torch.log(pseudo_gold_loss / (hard_loss + pseudo_gold_loss + in_batch_negative_loss))
    return torch.mean(loss)


def authors_choice(D, I, train_labels, query_labels, train_feats, no_hard_negatives, no_pseudo_gold_positives):  # noqa: E741, N803
    """The loop over the search results that fills the hard negatives and pseudo-gold positives."""
    largest_retrieval = no_pseudo_gold_positives
    batch_size, dim = len(query_labels), train_feats.shape[1]
    hard_negative_features = torch.zeros(batch_size, no_hard_negatives, dim)
    pseudo_positive_features = torch.zeros(batch_size, no_pseudo_gold_positives, dim)
    for i, row in enumerate(D):
        j = 0
        k = 0
        for iter, _value in enumerate(row):
            if train_labels[I[i, iter]].item() != query_labels[i].item() and j < no_hard_negatives:
                hard_negative_features[i][j] = train_feats[I[i, iter]]
                j += 1
            elif train_labels[I[i, iter]].item() == query_labels[i].item() and k < no_pseudo_gold_positives:
                pseudo_positive_features[i][k] = train_feats[I[i, iter]]
                k += 1
            if j == largest_retrieval and k == no_pseudo_gold_positives:
                break
    return hard_negative_features, pseudo_positive_features


def authors_vote(retrieved_labels, retrieved_sims, topk):
    """compute_metrics_retrieval's score per query, majority_voting "arithmetic", use_sim."""
    weight = np.arange(1, topk + 1)[::-1]
    scores = []
    for labels, sims in zip(retrieved_labels, retrieved_sims, strict=True):
        mapped = (np.array(labels) * 2 - 1) * np.array(sims)
        scores.append(np.sum(mapped * weight[:len(mapped)]) / np.sum(weight[:len(mapped)]))
    return np.array(scores)


# ----- helpers


def items(n: int, dim: int = 12, seed: int = 0, first_id: int = 1000) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)
    labels = (torch.rand(n, generator=generator) < 0.4).long()
    return [{"id": first_id + i, "text": "", "label": int(labels[i]), "clip_image": image[i], "clip_text": text[i]}
            for i in range(n)]


def model(**overrides) -> RGCL:
    config = {"projection_dim": 8, "num_layers": 2, "hidden_dim": 6, **overrides}
    return RGCL.build(RGCLConfig(**config), BuildContext({"clip": {"dim": 12}}))


def copy_into_authors(ours: RGCL) -> AuthorsClassifier:
    config = ours.config
    theirs = AuthorsClassifier(config.image_dim, config.text_dim, config.num_layers, config.hidden_dim,
                               config.projection_dim, config.fusion, config.drop_probs)
    ours_linears = [m for m in ours.modules() if isinstance(m, nn.Linear)]
    theirs_linears = [m for m in theirs.modules() if isinstance(m, nn.Linear)]
    for mine, authors in zip(ours_linears, theirs_linears, strict=True):
        authors.load_state_dict(mine.state_dict())
    return theirs


# ----- the classifier


@pytest.mark.parametrize("fusion", ["align", "cross"])
def test_classifier_equals_the_authors_in_eval_and_train_mode(fusion):
    torch.manual_seed(0)
    ours = model(fusion=fusion)
    theirs = copy_into_authors(ours)
    batch = ours.collate(items(10))
    for training in (False, True):
        ours.train(training), theirs.train(training)
        torch.manual_seed(7)
        logits, embedding = ours.encode(batch)
        torch.manual_seed(7)
        output, embed = theirs(batch["image_features"], batch["text_features"], return_embed=True)
        torch.testing.assert_close(logits, output.squeeze(1), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(embedding, embed, atol=1e-6, rtol=1e-5)


def test_contrastive_weight_zero_is_plain_fusion_trained_with_bce():
    ours = model(contrastive_weight=0.0).train()
    assert isinstance(ours(ours.collate(items(4))), torch.Tensor)  # logits only: the loop's BCE alone


# ----- the loss


@pytest.mark.parametrize("metric", ["cos", "ip"])
@pytest.mark.parametrize("kind", ["triplet", "contrastive"])
@pytest.mark.parametrize("hard", [1, 3])
def test_loss_equals_the_authors(kind, hard, metric):
    generator = torch.Generator().manual_seed(hard)
    batch, dim = 9, 5
    anchors = torch.randn(batch, dim, generator=generator, requires_grad=True)
    labels = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1, 0])
    positives = torch.randn(batch, 1, dim, generator=generator)
    positives[4] = 0  # a pseudo-gold positive not found: their zero vector
    negatives = torch.randn(batch, hard, dim, generator=generator)
    found = torch.ones(batch, hard, dtype=torch.bool)
    found[2, -1] = found[5] = False  # hard negatives not found: zero vectors in theirs, masked
    negatives[~found] = 0
    ours = rgcl_loss(anchors, labels, positives, negatives, found, kind, margin=0.1, metric=metric)
    theirs = authors_loss(anchors, labels, negatives, positives, kind, triplet_margin=0.1, metric=metric)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    ours_grad, = torch.autograd.grad(ours, anchors)
    theirs_grad, = torch.autograd.grad(authors_loss(anchors, labels, negatives, positives, kind, metric=metric),
                                       anchors)
    torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-6, rtol=1e-5)


def test_a_batch_of_one_label_has_no_in_batch_negatives():
    anchors, labels = torch.randn(4, 3), torch.ones(4, dtype=torch.long)
    positives, negatives = torch.randn(4, 1, 3), torch.randn(4, 1, 3)
    found = torch.ones(4, 1, dtype=torch.bool)
    for kind in ("triplet", "contrastive"):
        torch.testing.assert_close(rgcl_loss(anchors, labels, positives, negatives, found, kind, 0.1),
                                   authors_loss(anchors, labels, negatives, positives, kind))


# ----- retrieval


# Equal counts, as their experiments.sh (1, 1). With more hard negatives than positives their loop stops once it
# holds one of each at the same time (it compares the negatives found with `largest_retrieval`, which is the
# positives' count): ours takes the window's nearest hard negatives, as the paper describes them.
@pytest.mark.parametrize("hard,positives", [(1, 1), (2, 2), (3, 3)])
def test_positives_and_hard_negatives_are_chosen_as_the_authors_choose_them(hard, positives):
    torch.manual_seed(0)
    ours = model(hard_negatives=hard, pseudo_positives=positives, search_multiple=3).eval()
    train = items(40)
    ours.set_training_items(train)
    ours.refresh_index()
    ours._index = make_index("exact", ours.index_embeddings, ours.index_ids)
    batch = ours.collate(train[:10])
    _, queries = ours.encode(batch)
    got_positives, got_negatives, found = ours.neighbours(queries, batch["labels"], batch["ids"])
    window = 3 * max(hard, positives)
    # the authors' loop on the same search, their index without the query's own row (where ours differs)
    rows = make_index("exact", ours.index_embeddings, ours.index_ids).search(queries, window, batch["ids"])[1]
    negatives, pseudo = authors_choice(np.zeros(rows.shape), rows.numpy(), ours.index_labels, batch["labels"],
                                       ours.index_embeddings, hard, positives)
    torch.testing.assert_close(got_positives, pseudo)
    torch.testing.assert_close(got_negatives, negatives)
    assert torch.equal(found, negatives.abs().sum(-1) != 0)


def test_a_meme_never_retrieves_itself_and_the_backends_agree():
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(3)
    embeddings, ids = torch.randn(200, 16, generator=generator), torch.arange(500, 700)
    queries = torch.cat([embeddings[:30] + 0.01 * torch.randn(30, 16, generator=generator),
                         torch.randn(5, 16, generator=generator)])
    query_ids = torch.cat([ids[:30], torch.tensor([1, 2, 3, 4, 5])])
    for normalise in (True, False):  # cosine, and plain inner product (metric ip)
        exact, faiss = make_index("exact", embeddings, ids, normalise), make_index("faiss", embeddings, ids, normalise)
        for asked in (None, query_ids):
            scores, rows = exact.search(queries, 10, asked)
            faiss_scores, faiss_rows = faiss.search(queries, 10, asked)
            assert torch.equal(rows, faiss_rows)
            torch.testing.assert_close(scores, faiss_scores, atol=1e-4, rtol=1e-5)
    exact = make_index("exact", embeddings, ids)
    _, own = exact.search(queries, 10)
    assert (own[:30, 0] == torch.arange(30)).all()  # without ids, a near copy is its own nearest
    _, rows = exact.search(queries, 10, query_ids)
    assert not (ids[rows[:30]] == query_ids[:30, None]).any()
    brute = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(embeddings, dim=-1).T
    brute[torch.arange(30), torch.arange(30)] = -torch.inf
    assert torch.equal(rows, brute.topk(10, dim=1).indices)


def test_a_small_index_pads_with_no_neighbour():
    scores, rows = make_index("exact", torch.randn(3, 4), torch.arange(3)).search(torch.randn(2, 4), 5,
                                                                                  torch.tensor([0, 9]))
    assert rows[0].tolist()[2:] == [-1, -1, -1] and rows[1].tolist()[3:] == [-1, -1]
    assert torch.isinf(scores[rows < 0]).all()


def test_the_index_holds_the_training_memes_only_and_refreshes_every_n_batches(tmp_path):
    from hatememes.training import LoopParams, train

    class Items(list):
        ids = property(lambda self: [item["id"] for item in self])
        labels = property(lambda self: [item["label"] for item in self])

    torch.manual_seed(0)
    ours = model(refresh_every=3)
    refreshes, original = [], ours.refresh_index
    ours.refresh_index = lambda: (refreshes.append(int(ours.batches_seen)), original())
    train_items, dev_items = Items(items(40)), Items(items(20, seed=1, first_id=5000))
    train(ours, train_items, dev_items, LoopParams(epochs=2, batch_size=8, patience=5, checkpoint_every=1000), tmp_path)
    assert sorted(ours.index_ids.tolist()) == sorted(train_items.ids)  # no dev meme, and every training one
    assert refreshes == [0, 3, 6, 9]  # 10 batches in 2 epochs
    assert not (tmp_path / "model.safetensors").exists()
    ours.save_pretrained(tmp_path / "saved")
    assert RGCL.from_pretrained(tmp_path / "saved").state_dict().keys().isdisjoint({"index_embeddings", "index_ids"})


# ----- the kNN vote


def test_knn_vote_equals_the_authors_and_indexes_the_training_memes_only(tmp_path):
    torch.manual_seed(0)
    encoder = model()
    encoder.save_pretrained(tmp_path / "rgcl")
    (tmp_path / "rgcl" / "model.json").write_text("{}")
    knn = RGCLKnn.build(RGCLKnnConfig(encoder=str(tmp_path / "rgcl"), top_k=7), BuildContext())
    train, test = items(60), items(25, seed=2, first_id=9000)
    knn.fit(train, [])
    assert knn.ids.tolist() == [item["id"] for item in train]
    probs = knn.predict_proba(test)
    scores, rows = make_index("exact", knn.embeddings, knn.ids).search(knn.embed(test), 7)
    theirs = authors_vote(knn.labels[rows].tolist(), scores.tolist(), 7)
    np.testing.assert_allclose(probs, (1 + theirs) / 2, atol=1e-6)
    labels = np.array([item["label"] for item in test])
    assert auroc(labels, probs) == pytest.approx(auroc(labels, 1 / (1 + np.exp(-theirs))))  # their sigmoid
    knn.save_pretrained(tmp_path / "knn")
    np.testing.assert_allclose(RGCLKnn.from_pretrained(tmp_path / "knn").predict_proba(test), probs)
    on_train = knn.predict_proba(train[:5])  # a training meme votes without itself
    _, own_rows = make_index("exact", knn.embeddings, knn.ids).search(knn.embed(train[:5]), 7,
                                                                      torch.tensor([i["id"] for i in train[:5]]))
    assert not (own_rows == torch.arange(5)[:, None]).any() and on_train.shape == (5,)


def test_on_lmm_features_the_hidden_state_goes_straight_to_the_hidden_layers():
    """features: lmm (LMM-RGCL's second stage): one input, no maps and no fusion; the rest is rgcl's."""
    torch.manual_seed(0)
    ours = RGCL.build(RGCLConfig(features="lmm", num_layers=2, hidden_dim=6), BuildContext({"lmm": {"dim": 10}}))
    assert ours.inputs == ("lmm",) and not hasattr(ours, "image_projection")
    hidden = torch.randn(5, 10)
    batch = ours.collate([{"id": i, "label": i % 2, "lmm": hidden[i]} for i in range(5)])
    logits, embedding = ours.eval().encode(batch)
    torch.testing.assert_close(embedding, ours.hidden[:-2](hidden))
    torch.testing.assert_close(logits, ours.classifier(torch.relu(embedding)).squeeze(-1))

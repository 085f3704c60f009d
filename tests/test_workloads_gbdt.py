

def test_greedy_cuts_keep_bins_for_the_rest_of_a_heavy_value() -> None:
    from ringfl.workloads.gbdt import greedy_cuts

    uppers = np.arange(1.0, 101.0)  # sketch bins [0,1), [1,2), ..., [99,100)
    counts = np.full(100, 10.0)
    counts[0] = 10_000.0  # most rows are zero (like an image's background)
    cuts = greedy_cuts(uppers, counts, 16)
    assert cuts[0] == 1.0  # the heavy value is a bin of its own
    assert len(cuts) == 15  # and the other 15 bins share the remaining 99 values
    sizes = np.diff(np.concatenate([[1.0], cuts, [100.0]]))
    assert sizes.max() - sizes.min() <= 1

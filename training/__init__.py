"""Training: the pipeline (fit on 'fit', tune on 'validation', refit on 'train', evaluate on 'test',
publish), the GA tuner and its fitness cache (the candidate pool). Nothing here is loaded by the API;
hybrid/ holds what serving loads (fusion, bundle, index, recommender, explanations)."""

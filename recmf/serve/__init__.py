"""What a trained model needs to answer: the bundle, the recommender, fold-in, and the MLflow
pyfunc. numpy on the request path; never imports ``recmf.train``."""

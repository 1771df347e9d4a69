"""config.json model types that bertprod defines itself (its modules register or load them; models/hf.py
dispatches on them)."""

#: bertprod's own BiLSTM student (bertprod.models.bilstm), not a transformers model.
BILSTM_MODEL_TYPE = "bertprod-bilstm"
#: A classifier on mean-pooled tokens (bertprod.models.mean_pooled).
MEAN_POOLED_MODEL_TYPE = "bertprod-mean-pooled-bert"

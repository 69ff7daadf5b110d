"""tf.data input from committed runs: their union, views, the stored transform, a cache."""

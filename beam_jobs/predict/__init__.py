"""`tv-predict --source`: batch prediction with an exported model, a Beam job."""

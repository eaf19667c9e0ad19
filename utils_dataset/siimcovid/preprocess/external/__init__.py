"""External chest X-ray sets (RSNA Pneumonia, VinBigData, NIH ChestX-ray14, CheXpert) read as
published and written in the preprocess layout: ``python -m siimcovid external <source>``."""

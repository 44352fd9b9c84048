## contrib

/**
 * A bulk revocation's selector in its JSON form (serials in hex, times in ISO-8601): as the API
 * takes it, a proposal stores it and a bulk revocation run records it. Every criterion must hold.
 */
export interface RevocationSelectorJson {
  serials?: string[];
  deviceIds?: string[];
  lot?: string;
  caId?: string;
  issuedAfter?: string;
  issuedBefore?: string;
  lineageOf?: string;
}
